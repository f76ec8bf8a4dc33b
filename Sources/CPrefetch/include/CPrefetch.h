#ifndef TIDEPOOL_CPREFETCH_H
#define TIDEPOOL_CPREFETCH_H

/* A hint to the CPU to bring the cache line holding `p` into cache, for reading. Swift has no
 * way to express it; the engine's batched apply uses it to overlap the cache misses of many
 * customers. It changes no result: a wrong or stale address only wastes the hint. */
static inline void tp_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

#endif
