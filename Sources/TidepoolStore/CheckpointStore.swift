import CSQLite
import TidepoolEngine

/// A problem with the checkpoint file itself, reported at start with a clear message.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

/// The end of an output partition (the trigger topic) as acknowledged when a checkpoint was taken.
public struct OutputOffset: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var nextOffset: Int64
    public init(topic: String, partition: Int32, nextOffset: Int64) {
        self.topic = topic
        self.partition = partition
        self.nextOffset = nextOffset
    }
}

/// The partition rows of a checkpoint: where each partition's state stands.
public struct PartitionCheckpoint: Sendable, Equatable {
    public var partition: PartitionID
    /// The next input offset to process: the state reflects every record before it.
    public var nextOffset: Int64
    public var maxEventTimeMs: Int64
    public var streamTimeMs: Int64
}

/// Engine state in SQLite: one row per customer (WITHOUT ROWID, encoded state), one row per
/// partition with the input offset the state reflects, and the format and configuration versions.
/// Customer rows are keyed by (pid, customer_id), pid being a small integer per input partition
/// (`partition_ids`): with the (topic, partition, customer_id) key of format 1 every B-tree step
/// compared the topic text too, and rows were written ~1.25x slower.
/// A checkpoint is one transaction: customers, evictions and offsets commit together or not at all.
/// WAL journal with synchronous=NORMAL: a crash loses at most the checkpoint being written, never
/// a committed one.
public final class CheckpointStore {
    public static let formatVersion = "2"
    let conn: SQLiteConnection
    public let path: String
    private let upsertCustomer: SQLiteConnection.Statement
    /// `rowsPerInsert` rows in one statement: one execution keeps its B-tree cursor where the last
    /// sorted row went, where one statement per row opened a cursor and descended from the root
    /// each time. In a C program against libsqlite3 (1M sorted rows): 665-690k rows/s one by one,
    /// 1.0-1.15M with 128-256 per statement.
    private let upsertCustomers: SQLiteConnection.Statement
    static let rowsPerInsert = 256
    private let deleteCustomer: SQLiteConnection.Statement
    private let upsertPartition: SQLiteConnection.Statement
    private let upsertErased: SQLiteConnection.Statement
    private let upsertOutput: SQLiteConnection.Statement
    /// pid of each input partition seen (`partition_ids`).
    private var pids: [PartitionID: Int64] = [:]

    /// Opens (or creates) the checkpoint at `path`. A file that fails SQLite's integrity check,
    /// or was written by another format version, is refused with the reason.
    public init(path: String, configVersion: String) throws {
        self.path = path
        conn = try SQLiteConnection(path: path)
        do {
            // 16 KiB pages (new files only; SQLite fixes the size at creation): customer rows are a
            // few hundred bytes, and larger pages wrote ~25% more rows per second here.
            // No automatic WAL checkpoint: it ran inside the commit of every large checkpoint and
            // copied it all a second time (2 s of a 5 s write for 1M customers); `foldWAL()` does
            // it after the commit instead.
            // The file memory-mapped for reads (up to SQLite's 2 GiB cap): the integrity check and
            // the restore read pages in place instead of copying each through read(); on 1M
            // customers the open went 751 -> 164 ms and the restore 3.3 -> 2.6 s. SQLite maps the
            // file read-only; an I/O error while reading becomes SIGBUS (systemd restarts us).
            try conn.exec("PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-131072; PRAGMA wal_autocheckpoint=0; PRAGMA mmap_size=2147418112;")
            let check = try conn.scalarText("PRAGMA quick_check") ?? "no answer"
            guard check == "ok" else { throw CheckpointError(message: "\(path): integrity check failed: \(check)") }
            try conn.exec("""
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS partitions(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    next_offset INTEGER NOT NULL, max_event_time INTEGER NOT NULL, stream_time INTEGER NOT NULL,
                    PRIMARY KEY(topic, partition)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS erased(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    id_hash INTEGER NOT NULL, erased_at INTEGER NOT NULL,
                    PRIMARY KEY(topic, partition, id_hash)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS outputs(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    next_offset INTEGER NOT NULL, PRIMARY KEY(topic, partition)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS partition_ids(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    pid INTEGER NOT NULL UNIQUE, PRIMARY KEY(topic, partition)) WITHOUT ROWID;
                """)
            let format = try conn.scalarText("SELECT value FROM meta WHERE key = 'format_version'")
            if format == "1" {
                try CheckpointStore.migrateFromFormat1(conn)
            } else if let format, format != CheckpointStore.formatVersion {
                throw CheckpointError(message: "\(path): checkpoint format \(format), this build reads formats 1 and \(CheckpointStore.formatVersion)")
            }
            try conn.exec("""
                CREATE TABLE IF NOT EXISTS customers(pid INTEGER NOT NULL, customer_id TEXT NOT NULL, state BLOB NOT NULL,
                    PRIMARY KEY(pid, customer_id)) WITHOUT ROWID;
                """)
            pids = try CheckpointStore.readPids(conn)
        } catch let e as SQLiteError {
            throw CheckpointError(message: "\(path): not a usable checkpoint: \(e.message)")
        }
        try conn.exec("INSERT OR REPLACE INTO meta(key, value) VALUES('format_version', '\(CheckpointStore.formatVersion)')")
        let stored = try conn.scalarText("SELECT value FROM meta WHERE key = 'config_version'")
        storedConfigVersion = stored
        let set = try conn.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('config_version', ?)")
        set.bind(1, configVersion)
        try set.run()
        upsertCustomer = try conn.prepare("INSERT OR REPLACE INTO customers(pid, customer_id, state) VALUES(?1, ?2, ?3)")
        upsertCustomers = try conn.prepare("INSERT OR REPLACE INTO customers(pid, customer_id, state) VALUES"
            + (0..<CheckpointStore.rowsPerInsert).map { "(?1, ?\(2 + 2 * $0), ?\(3 + 2 * $0))" }.joined(separator: ", "))
        deleteCustomer = try conn.prepare("DELETE FROM customers WHERE pid = ? AND customer_id = ?")
        upsertErased = try conn.prepare("INSERT OR REPLACE INTO erased(topic, partition, id_hash, erased_at) VALUES(?, ?, ?, ?)")
        upsertOutput = try conn.prepare("INSERT OR REPLACE INTO outputs(topic, partition, next_offset) VALUES(?, ?, ?)")
        upsertPartition = try conn.prepare(
            "INSERT OR REPLACE INTO partitions(topic, partition, next_offset, max_event_time, stream_time) VALUES(?, ?, ?, ?, ?)")
    }

    /// Format 1 keyed customer rows by (topic, partition, customer_id); format 2 by (pid,
    /// customer_id). One transaction: the file is either still format 1 or wholly format 2.
    static func migrateFromFormat1(_ conn: SQLiteConnection) throws {
        try conn.exec("BEGIN IMMEDIATE")
        do {
            let list = try conn.prepare("""
                SELECT topic, partition FROM customers UNION SELECT topic, partition FROM partitions ORDER BY 1, 2
                """)
            var seen: [(String, Int64)] = []
            while try list.step() { seen.append((list.text(0), list.int64(1))) }
            let add = try conn.prepare("INSERT OR IGNORE INTO partition_ids(topic, partition, pid) VALUES(?, ?, ?)")
            for (i, (topic, partition)) in seen.enumerated() {
                add.reset()
                add.bind(1, topic); add.bind(2, partition); add.bind(3, Int64(i + 1))
                try add.run()
            }
            try conn.exec("""
                CREATE TABLE customers_v2(pid INTEGER NOT NULL, customer_id TEXT NOT NULL, state BLOB NOT NULL,
                    PRIMARY KEY(pid, customer_id)) WITHOUT ROWID;
                INSERT INTO customers_v2(pid, customer_id, state)
                    SELECT i.pid, c.customer_id, c.state FROM customers c
                    JOIN partition_ids i ON i.topic = c.topic AND i.partition = c.partition
                    ORDER BY i.pid, c.customer_id;
                DROP TABLE customers;
                ALTER TABLE customers_v2 RENAME TO customers;
                UPDATE meta SET value = '2' WHERE key = 'format_version';
                COMMIT;
                """)
        } catch {
            try? conn.exec("ROLLBACK")
            throw error
        }
    }

    static func readPids(_ conn: SQLiteConnection) throws -> [PartitionID: Int64] {
        let ids = try conn.prepare("SELECT topic, partition, pid FROM partition_ids")
        var known: [PartitionID: Int64] = [:]
        while try ids.step() { known[PartitionID(topic: ids.text(0), partition: Int32(ids.int64(1)))] = ids.int64(2) }
        return known
    }

    /// The pid of an input partition; a new one gets the next free number (inside the caller's
    /// transaction).
    private func pid(_ p: PartitionID) throws -> Int64 {
        if let id = pids[p] { return id }
        let next = (pids.values.max() ?? 0) + 1
        let add = try conn.prepare("INSERT INTO partition_ids(topic, partition, pid) VALUES(?, ?, ?)")
        add.bind(1, p.topic); add.bind(2, Int64(p.partition)); add.bind(3, next)
        try add.run()
        pids[p] = next
        return next
    }

    /// The configuration version the file was last written with (nil for a new file).
    public let storedConfigVersion: String?
    /// The segments (name, rule) a partition's memberships were written with (nil: not recorded).
    public func storedSegments(_ p: PartitionID) throws -> [(name: String, rule: String)]? {
        let s = try conn.prepare("SELECT value FROM meta WHERE key = ?")
        s.bind(1, "segments:\(p.partition):\(p.topic)")
        guard try s.step() else { return nil }
        return CheckpointStore.decodeSegments(s.text(0))
    }

    /// One segment per line, "name<TAB>rule", with backslash, newline and tab escaped in rules.
    static func encodeSegments(_ segments: [(name: String, rule: String)]) -> String {
        segments.map { s in
            var rule = ""
            for ch in s.rule {
                switch ch {
                case "\\": rule += "\\\\"
                case "\n": rule += "\\n"
                case "\t": rule += "\\t"
                default: rule.append(ch)
                }
            }
            return s.name + "\t" + rule
        }.joined(separator: "\n")
    }

    static func decodeSegments(_ text: String) -> [(name: String, rule: String)] {
        guard !text.isEmpty else { return [] }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            let parts = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            var rule = ""
            var escaped = false
            for ch in parts.count > 1 ? parts[1] : "" {
                if escaped {
                    rule.append(ch == "n" ? "\n" : ch == "t" ? "\t" : ch)
                    escaped = false
                } else if ch == "\\" {
                    escaped = true
                } else {
                    rule.append(ch)
                }
            }
            return (String(parts[0]), rule)
        }
    }

    /// Writes one checkpoint: every snapshot with the offset it reflects, in one transaction.
    /// `outputs`: the end of the trigger topic's partitions as acknowledged when the snapshot was
    /// taken (every trigger the checkpointed state implies lies before them).
    public func write(_ snapshots: [(PartitionSnapshot, nextOffset: Int64)], outputs: [OutputOffset] = [],
                      segments: [(name: String, rule: String)]? = nil) throws {
        try conn.exec("BEGIN IMMEDIATE")
        do {
            if let segments {
                // Per partition: a partition's rows are rewritten only when it is assigned here.
                let set = try conn.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)")
                let text = CheckpointStore.encodeSegments(segments)
                for (s, _) in snapshots {
                    set.reset()
                    set.bind(1, "segments:\(s.partition.partition):\(s.partition.topic)")
                    set.bind(2, text)
                    try set.run()
                }
            }
            for o in outputs {
                upsertOutput.bind(1, o.topic); upsertOutput.bind(2, Int64(o.partition)); upsertOutput.bind(3, o.nextOffset)
                try upsertOutput.run()
            }
            for (s, next) in snapshots {
                let topic = s.partition.topic, part = Int64(s.partition.partition)
                let pid = try pid(s.partition)
                // Evictions first: a customer evicted and seen again since is in both lists.
                for id in s.removed {
                    deleteCustomer.bind(1, pid); deleteCustomer.bind(2, id)
                    try deleteCustomer.run()
                }
                try writeCustomers(s, pid: pid)
                for (hash, at) in s.erased {
                    upsertErased.bind(1, topic); upsertErased.bind(2, part); upsertErased.bind(3, Int64(bitPattern: hash)); upsertErased.bind(4, at)
                    try upsertErased.run()
                }
                upsertPartition.bind(1, topic); upsertPartition.bind(2, part); upsertPartition.bind(3, next)
                upsertPartition.bind(4, s.maxEventTimeMs); upsertPartition.bind(5, s.streamTimeMs)
                try upsertPartition.run()
            }
            try conn.exec("COMMIT")
        } catch {
            try? conn.exec("ROLLBACK")
            // A pid handed out inside the rolled-back transaction is gone from the file.
            if let known = try? CheckpointStore.readPids(conn) { pids = known }
            throw error
        }
    }

    /// The changed customers of one snapshot, in key order (random B-tree inserts become
    /// appends-and-neighbours). The capture encoded the states; a helper thread copies them, with
    /// their ids next to them, into chunk buffers in key order a chunk ahead of the inserts
    /// (`ChunkedRows`): reading ids and states in sorted order is a cache miss or two per row. Rows
    /// are bound in place from the chunk's buffer, so a row costs no allocation; the pid is bound
    /// once.
    private func writeCustomers(_ s: PartitionSnapshot, pid: Int64) throws {
        let ids = s.changedIDs
        let order = CheckpointStore.byteOrder(ids)
        let stmt = upsertCustomer, batch = upsertCustomers
        stmt.reset()
        stmt.bind(1, pid)
        batch.reset()
        batch.bind(1, pid)
        defer {
            stmt.reset()
            batch.reset()
        }
        let states = s.changedStates
        do {
            try ChunkedRows.run(count: order.count, key: { ids[order[$0]] }, value: { k, bytes in
                states.withBytes(order[k]) { bytes.append(contentsOf: $0) }
            }, consume: { rows in
                var i = 0
                let n = CheckpointStore.rowsPerInsert
                while rows.count - i >= n {
                    for r in 0..<n {
                        batch.bindStatic(Int32(2 + 2 * r), text: rows.key(i + r))
                        batch.bindStatic(Int32(3 + 2 * r), blob: rows.value(i + r))
                    }
                    try batch.runKeepingBindings()
                    i += n
                }
                while i < rows.count {
                    stmt.bindStatic(2, text: rows.key(i))
                    stmt.bindStatic(3, blob: rows.value(i))
                    try stmt.runKeepingBindings()
                    i += 1
                }
            })
        }
    }

    /// Indices of `ids` in the order of their UTF-8 bytes (SQLite's BINARY collation, so rows go
    /// to the B-tree in key order). Sorting on an 8-byte big-endian prefix first: comparing Swift
    /// Strings cost ~2 s per million ids here, this ~0.2 s.
    static func byteOrder(_ ids: [String]) -> [Int] {
        var keyed: [(prefix: UInt64, index: Int32)] = ids.indices.map { i in
            var p: UInt64 = 0
            var n = 0
            for b in ids[i].utf8 {
                if n == 8 { break }
                p |= UInt64(b) << UInt64(56 - 8 * n)
                n += 1
            }
            return (p, Int32(i))
        }
        keyed.sort { a, b in
            if a.prefix != b.prefix { return a.prefix < b.prefix }
            return ids[Int(a.index)].utf8.lexicographicallyPrecedes(ids[Int(b.index)].utf8)
        }
        return keyed.map { Int($0.index) }
    }

    /// Copies committed WAL content into the database file (a passive SQLite checkpoint), so the
    /// WAL does not grow without bound. Call it after `write`, off the processing thread. A
    /// reader holding an old snapshot only delays part of it to the next fold.
    public func foldWAL() {
        _ = try? conn.exec("PRAGMA wal_checkpoint(PASSIVE)")
    }

    /// The output (trigger topic) offsets of the last checkpoint.
    public func outputs() throws -> [OutputOffset] {
        let s = try conn.prepare("SELECT topic, partition, next_offset FROM outputs ORDER BY topic, partition")
        var out: [OutputOffset] = []
        while try s.step() { out.append(OutputOffset(topic: s.text(0), partition: Int32(s.int64(1)), nextOffset: s.int64(2))) }
        return out
    }

    /// Where a partition's checkpoint stands, or nil when it has none.
    public func partition(_ p: PartitionID) throws -> PartitionCheckpoint? {
        let s = try conn.prepare("SELECT next_offset, max_event_time, stream_time FROM partitions WHERE topic = ? AND partition = ?")
        s.bind(1, p.topic)
        s.bind(2, Int64(p.partition))
        guard try s.step() else { return nil }
        return PartitionCheckpoint(partition: p, nextOffset: s.int64(0), maxEventTimeMs: s.int64(1), streamTimeMs: s.int64(2))
    }

    /// Every customer of a partition: id and encoded state.
    public func customers(_ p: PartitionID) throws -> [(String, [UInt8])] {
        guard let pid = pids[p] else { return [] }
        let s = try conn.prepare("SELECT customer_id, state FROM customers WHERE pid = ?")
        s.bind(1, pid)
        var out: [(String, [UInt8])] = []
        while try s.step() { out.append((s.text(0), s.blob(1))) }
        return out
    }

    /// Keyed hashes of a partition's erased customers, with their erasure times.
    public func erased(_ p: PartitionID) throws -> [UInt64: Int64] {
        let s = try conn.prepare("SELECT id_hash, erased_at FROM erased WHERE topic = ? AND partition = ?")
        s.bind(1, p.topic)
        s.bind(2, Int64(p.partition))
        var out: [UInt64: Int64] = [:]
        while try s.step() { out[UInt64(bitPattern: s.int64(0))] = s.int64(1) }
        return out
    }

    /// Loads a partition into `engine`; returns the offset to resume from (nil: no checkpoint).
    /// Restores a partition into `engine`; returns its next input offset (nil: no checkpoint) and,
    /// when the checkpoint was written under other segment rules, how they were adopted.
    public func restore(_ p: PartitionID, into engine: Engine,
                        policy: ReloadPolicy = .emit) throws -> (nextOffset: Int64, rulesChanged: ReconfigureReport?)? {
        guard let cp = try partition(p) else { return nil }
        let erasedRows = try erased(p)
        let stored = try storedSegments(p)
        var count = 0
        if let pid = pids[p] {
            let n = try conn.prepare("SELECT count(*) FROM customers WHERE pid = ?")
            n.bind(1, pid)
            if try n.step() { count = Int(n.int64(0)) }
        }
        var restoring = engine.beginRestore(maxEventTimeMs: cp.maxEventTimeMs, streamTimeMs: cp.streamTimeMs,
                                            stats: PartitionStats(), customerCount: count, erased: erasedRows)
        if let pid = pids[p] {
            // Rows are read and decoded on a helper thread, a chunk ahead of the engine taking them.
            let rows = try conn.prepare("SELECT customer_id, state FROM customers WHERE pid = ?")
            rows.bind(1, pid)
            // Stepping a finished statement would run it again from the start.
            var exhausted = false
            do {
                try HelperThread.run((DecodedChunk(), DecodedChunk()), produce: { chunk in
                    chunk.ids.removeAll(keepingCapacity: true)
                    chunk.records.removeAll(keepingCapacity: true)
                    while !exhausted && chunk.ids.count < ChunkedRows.chunkRows {
                        guard try rows.step() else {
                            exhausted = true
                            break
                        }
                        let id = rows.text(0)
                        do {
                            chunk.records.append(try CustomerRecordCodec.decode(rows.blobBytes(1)))
                        } catch {
                            throw CheckpointError(message: "\(self.path): customer state of \(p) cannot be read: customer \(id): \(error)")
                        }
                        chunk.ids.append(id)
                    }
                    return !chunk.ids.isEmpty
                }, consume: { chunk in
                    // Moved out of the chunk (from its end: popLast moves, a subscript copies):
                    // a copy retained each of the record's arrays here and the chunk's next
                    // reuse released them on the helper thread, two atomic operations per array
                    // on cold memory shared between the threads.
                    while let record = chunk.records.popLast(), let id = chunk.ids.popLast() {
                        engine.add(id, record, to: &restoring)
                    }
                })
            } catch let e as SQLiteError {
                throw CheckpointError(message: "\(path): customer state of \(p) cannot be read: \(e.message)")
            }
        }
        let report = engine.finishRestore(p, restoring, storedSegments: stored, policy: policy)
        return (cp.nextOffset, report)
    }

    final class DecodedChunk {
        var ids: [String] = []
        var records: [CustomerRecord] = []
    }
}
