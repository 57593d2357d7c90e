// zlib from the system (Debian: zlib1g-dev), for gzip in the UCAN container.
#include <zlib.h>
