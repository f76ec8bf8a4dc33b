#ifndef TIDEPOOL_CRDKAFKA_SHIM_H
#define TIDEPOOL_CRDKAFKA_SHIM_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* Swift cannot import the variadic rd_kafka_producev() nor macros that cast,
 * so the few we need are wrapped here as static inline functions. */

static inline int32_t tp_partition_ua(void) { return RD_KAFKA_PARTITION_UA; }
static inline int64_t tp_offset_beginning(void) { return RD_KAFKA_OFFSET_BEGINNING; }
static inline int64_t tp_offset_end(void) { return RD_KAFKA_OFFSET_END; }
static inline int64_t tp_offset_stored(void) { return RD_KAFKA_OFFSET_STORED; }
static inline int64_t tp_offset_invalid(void) { return RD_KAFKA_OFFSET_INVALID; }

/* Produce one message to a topic handle (RD_KAFKA_V_RKT; by name, librdkafka would find the
 * topic again for every message, under the client's write lock), with an optional header list.
 * Payload and key are copied. On success librdkafka owns `headers`; on failure the caller
 * still owns them. */
static inline rd_kafka_resp_err_t tp_produce(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t partition,
                                                 const void *key, size_t key_len,
                                                 const void *payload, size_t len,
                                                 rd_kafka_headers_t *headers, void *opaque) {
    if (headers) {
        return rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)payload, len),
                                 RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    }
    return rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)payload, len),
                             RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
}

#endif
