import CRdKafka

/// librdkafka's built-in mock cluster: a real Kafka protocol endpoint on loopback, used by the
/// demo, the tests and `tidepool mock-broker` (no Apache Kafka can be installed here).
/// Known limits (librdkafka 2.0.2): ~5 MiB retained per partition, ~3 s before the first group
/// join, no real transaction markers.
public final class MockCluster {
    private let rk: OpaquePointer
    private let cluster: OpaquePointer
    /// `host:port,...` to put in `bootstrap.servers`.
    public let bootstrapServers: String

    public init(brokers: Int32 = 1) throws {
        let conf = try makeConf(["log_level": "3"])
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errbuf, errbuf.count) else {
            throw KafkaError.config("cannot create mock cluster handle: \(String(cString: errbuf))")
        }
        rk = handle
        guard let mc = rd_kafka_mock_cluster_new(rk, brokers) else {
            rd_kafka_destroy(rk)
            throw KafkaError.config("rd_kafka_mock_cluster_new failed")
        }
        cluster = mc
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(mc))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(rk)
    }

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        let err = rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "create topic \(name)") }
    }
}
