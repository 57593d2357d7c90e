// libsodium from the system (Debian: libsodium-dev): BLAKE2b for Cardano's key hashes and transaction ids.
#include <sodium.h>
