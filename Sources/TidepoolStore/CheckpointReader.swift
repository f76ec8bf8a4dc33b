import CSQLite
import TidepoolEngine

/// Read-only access to a checkpoint file, for `tidepool inspect --offline`: it never writes, so it
/// is safe next to a running daemon (SQLite WAL readers do not block the writer).
public final class CheckpointReader {
    let conn: SQLiteConnection
    public let path: String

    public init(path: String) throws {
        self.path = path
        do {
            conn = try SQLiteConnection(path: path, readOnly: true)
            let format = try conn.scalarText("SELECT value FROM meta WHERE key = 'format_version'")
            guard format == CheckpointStore.formatVersion else {
                let hint = format == "1" ? " (the daemon migrates a format 1 file when it starts; this reader never writes)" : ""
                throw CheckpointError(message: "\(path): checkpoint format \(format ?? "none"), this build reads format \(CheckpointStore.formatVersion)\(hint)")
            }
        } catch let e as SQLiteError {
            throw CheckpointError(message: "\(path): not a usable checkpoint: \(e.message)")
        }
    }

    /// Where the customer's state is and the partition row it belongs to, or nil.
    public func find(_ customerID: String) throws -> (PartitionCheckpoint, [UInt8])? {
        let s = try conn.prepare("""
            SELECT p.topic, p.partition, c.state, p.next_offset, p.max_event_time, p.stream_time
            FROM partition_ids i JOIN customers c ON c.pid = i.pid AND c.customer_id = ?
            JOIN partitions p ON p.topic = i.topic AND p.partition = i.partition
            LIMIT 1
            """)
        s.bind(1, customerID)
        guard try s.step() else { return nil }
        let p = PartitionCheckpoint(partition: PartitionID(topic: s.text(0), partition: Int32(s.int64(1))),
                                    nextOffset: s.int64(3), maxEventTimeMs: s.int64(4), streamTimeMs: s.int64(5))
        return (p, s.blob(2))
    }

    /// Customers per partition.
    public func partitionSizes() throws -> [(PartitionCheckpoint, Int)] {
        let s = try conn.prepare("""
            SELECT p.topic, p.partition, p.next_offset, p.max_event_time, p.stream_time,
                   (SELECT count(*) FROM customers c JOIN partition_ids i ON c.pid = i.pid
                    WHERE i.topic = p.topic AND i.partition = p.partition)
            FROM partitions p ORDER BY p.topic, p.partition
            """)
        var out: [(PartitionCheckpoint, Int)] = []
        while try s.step() {
            out.append((PartitionCheckpoint(partition: PartitionID(topic: s.text(0), partition: Int32(s.int64(1))),
                                            nextOffset: s.int64(2), maxEventTimeMs: s.int64(3), streamTimeMs: s.int64(4)),
                        Int(s.int64(5))))
        }
        return out
    }
}
