// glibc's allocator statistics and trimming (<malloc.h>): what the heap give-back reads and does. Other C
// libraries (musl) have neither; the Swift side uses them only where it imports Glibc.
#include <stddef.h>
#include <stdlib.h>
#if defined(__GLIBC__)
#include <malloc.h>

/// Bytes allocated and not freed: in the arenas plus in chunks of their own mappings. (A wrapper, because Swift
/// reads `mallinfo2()` as the zero initializer of the struct of the same name.)
static inline size_t orrery_heap_bytes_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}
#endif
