#define _GNU_SOURCE
#include <sys/mman.h>
#include <malloc.h>
#include "CMemory.h"

void *tp_mremap_grow(void *old_address, size_t old_size, size_t new_size) {
    void *p = mremap(old_address, old_size, new_size, MREMAP_MAYMOVE);
    return p == MAP_FAILED ? NULL : p;
}

size_t tp_heap_bytes_in_use(void) { return mallinfo2().uordblks; }

size_t tp_heap_bytes_free(void) { return mallinfo2().fordblks; }
