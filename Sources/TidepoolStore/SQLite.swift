import CSQLite

/// An error from SQLite, with its result code and message.
public struct SQLiteError: Error, CustomStringConvertible, Equatable {
    public var code: Int32
    public var message: String
    public var description: String { "SQLite error \(code): \(message)" }
}

/// A minimal, honest wrapper over the SQLite C API: one connection, prepared statements.
/// The hot path (checkpoint writes) uses prepared statements on WITHOUT ROWID tables, measured
/// here at about twice GRDB's convenience API (BRIEF.md), which is why GRDB is not used.
final class SQLiteConnection {
    private(set) var db: OpaquePointer?

    init(path: String, readOnly: Bool = false) throws {
        let flags = readOnly ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        if rc != SQLITE_OK {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            db = nil
            throw SQLiteError(code: rc, message: "\(path): \(msg)")
        }
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { sqlite3_close_v2(db) }

    func error(_ rc: Int32, _ context: String) -> SQLiteError {
        SQLiteError(code: rc, message: "\(context): \(String(cString: sqlite3_errmsg(db)))")
    }

    func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>? = nil
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? ""
            sqlite3_free(err)
            throw SQLiteError(code: rc, message: "\(msg) in: \(sql.prefix(80))")
        }
    }

    func prepare(_ sql: String) throws -> Statement {
        var stmt: OpaquePointer? = nil
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare \(sql.prefix(80))") }
        return Statement(stmt: stmt, connection: self)
    }

    /// Single text value of a query (PRAGMA results and the like).
    func scalarText(_ sql: String) throws -> String? {
        let s = try prepare(sql)
        return try s.step() ? s.text(0) : nil
    }

    final class Statement {
        let stmt: OpaquePointer
        unowned let connection: SQLiteConnection
        init(stmt: OpaquePointer, connection: SQLiteConnection) {
            self.stmt = stmt
            self.connection = connection
        }
        deinit { sqlite3_finalize(stmt) }

        func reset() {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        func bind(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
        func bind(_ i: Int32, _ v: String) { sqlite3_bind_text(stmt, i, v, -1, tp_sqlite_transient()) }
        func bind(_ i: Int32, _ v: [UInt8]) {
            v.withUnsafeBytes { b in _ = sqlite3_bind_blob(stmt, i, b.baseAddress, Int32(b.count), tp_sqlite_transient()) }
        }
        /// Binds without copying (SQLITE_STATIC): the bytes must stay valid until the statement is
        /// stepped and reset. The checkpoint hot path uses these inside `withUnsafeBytes`.
        func bindStatic(_ i: Int32, text b: UnsafeRawBufferPointer) {
            // An empty id still needs a non-null pointer (NULL would bind SQL NULL).
            let empty: StaticString = ""
            let p = b.count > 0 ? b.baseAddress!.assumingMemoryBound(to: CChar.self)
                                : UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self)
            sqlite3_bind_text(stmt, i, p, Int32(b.count), nil)
        }
        func bindStatic(_ i: Int32, blob b: UnsafeRawBufferPointer) {
            let empty: StaticString = ""
            sqlite3_bind_blob(stmt, i, b.count > 0 ? b.baseAddress! : UnsafeRawPointer(empty.utf8Start), Int32(b.count), nil)
        }
        /// Steps a statement that returns no rows and resets it, keeping its bindings (the
        /// checkpoint loop rebinds only what changes from row to row).
        func runKeepingBindings() throws {
            let rc = sqlite3_step(stmt)
            sqlite3_reset(stmt)
            guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw connection.error(rc, "step") }
        }

        /// True when a row is available, false when done.
        func step() throws -> Bool {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_ROW { return true }
            if rc == SQLITE_DONE { return false }
            throw connection.error(rc, "step")
        }

        func run() throws {
            _ = try step()
            reset()
        }

        func int64(_ col: Int32) -> Int64 { sqlite3_column_int64(stmt, col) }
        func text(_ col: Int32) -> String {
            guard let p = sqlite3_column_text(stmt, col) else { return "" }
            return String(cString: p)
        }
        /// The column's bytes in place: valid until the next step or reset.
        func blobBytes(_ col: Int32) -> UnsafeRawBufferPointer {
            let n = Int(sqlite3_column_bytes(stmt, col))
            guard n > 0, let p = sqlite3_column_blob(stmt, col) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
            return UnsafeRawBufferPointer(start: p, count: n)
        }
        func blob(_ col: Int32) -> [UInt8] { Array(blobBytes(col)) }
    }
}
