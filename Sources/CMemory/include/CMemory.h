#ifndef TIDEPOOL_CMEMORY_H
#define TIDEPOOL_CMEMORY_H

#include <stddef.h>

/* A hint to the CPU to bring the cache line holding `p` into cache, for reading. Swift has no
 * way to express it; the engine's batched apply uses it to overlap the cache misses of many
 * customers. It changes no result: a wrong or stale address only wastes the hint. */
static inline void tp_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

/* Grows an anonymous mapping from `old_size` to `new_size` bytes, moving it if it must
 * (mremap with MREMAP_MAYMOVE: the kernel moves page-table entries, no byte is copied). Returns
 * the new address, or NULL when the kernel refuses. A function because mremap is variadic in C,
 * which Swift cannot call. */
void *tp_mremap_grow(void *old_address, size_t old_size, size_t new_size);

/* Bytes of the glibc heap in use and free (mallinfo2's uordblks and fordblks), for the
 * benchmark's memory breakdown. */
size_t tp_heap_bytes_in_use(void);
size_t tp_heap_bytes_free(void);

#endif
