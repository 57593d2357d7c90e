// libsecp256k1 from the system (Debian: libsecp256k1-dev): ECDSA over secp256k1 with public-key recovery.
#include <secp256k1.h>
#include <secp256k1_recovery.h>
