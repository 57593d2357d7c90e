// zstd from the system (Debian: libzstd-dev), for zstd-compressed OCI image layers.
#include <zstd.h>
