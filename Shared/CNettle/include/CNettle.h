// nettle from the system (Debian: nettle-dev): the Keccak-f[1600] permutation behind Ethereum's keccak-256.
#include <nettle/sha3.h>
