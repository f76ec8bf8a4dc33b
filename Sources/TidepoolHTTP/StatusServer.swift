import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TidepoolDaemon
import TidepoolEngine

/// The operations endpoint, bound to `http.listen` (127.0.0.1:9464 by default):
///
/// | path | answer |
/// |---|---|
/// | `/metrics` | Prometheus text format (PrometheusExposition) |
/// | `/healthz` | 200 while the pipeline runs, 503 once it has stopped |
/// | `/readyz` | 200 once the assigned partitions are restored and processing runs, else 503 |
/// | `/segments` | members and transitions per segment, rules version (JSON) |
/// | `/customers/{id}` | state, memberships with explanations, campaign state (JSON); 404 when not in memory |
///
/// It reads the counters the pipeline publishes once per batch; customer queries run on the
/// pipeline thread between batches (`Pipeline.customerView`), so the engine is never shared.
public final class StatusServer: Sendable {
    let worker: PipelineThread
    let host: String
    let port: Int
    let logger: Logger

    public init(worker: PipelineThread, listen: String, logger: Logger) throws {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw ValidationFailure(message: "http.listen must be host:port")
        }
        self.worker = worker
        self.host = String(listen[..<colon])
        self.port = port
        self.logger = logger
    }

    struct ValidationFailure: Error { let message: String }

    private let group = Mutex<ServiceGroup?>(nil)
    private let stopped = Atomic<Bool>(false)

    /// Stops serving: open requests finish, then `run` returns.
    public func stop() async {
        stopped.store(true, ordering: .relaxed)
        let g = group.withLock { $0 }
        await g?.triggerGracefulShutdown()
    }

    /// Serves until `stop()`. `onRunning` gets the bound port.
    public func run(onRunning: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        let worker = self.worker
        router.get("/metrics") { _, _ -> Response in
            let text = PrometheusExposition.render(worker.pipeline.metrics.snapshot, nowMs: WallClock.nowMs())
            return Self.response(.ok, PrometheusExposition.contentType, Array(text.utf8))
        }
        router.get("/healthz") { _, _ -> Response in
            worker.finished == nil
                ? Self.response(.ok, "text/plain", Array("ok\n".utf8))
                : Self.response(.serviceUnavailable, "text/plain", Array("stopped\n".utf8))
        }
        router.get("/readyz") { _, _ -> Response in
            worker.pipeline.metrics.snapshot.ready && worker.finished == nil
                ? Self.response(.ok, "text/plain", Array("ready\n".utf8))
                : Self.response(.serviceUnavailable, "text/plain", Array("not ready: restoring or waiting for partitions\n".utf8))
        }
        router.get("/segments") { _, _ -> Response in
            Self.response(.ok, "application/json", InspectionJSON.encode(InspectionJSON.segments(worker.pipeline.metrics.snapshot)))
        }
        router.get("/customers/:id") { _, context -> Response in
            guard let id = context.parameters.get("id"), !id.isEmpty else {
                return Self.response(.badRequest, "text/plain", Array("customer id missing\n".utf8))
            }
            let body: [UInt8]? = await withCheckedContinuation { cont in
                worker.pipeline.customerView(id) { view in
                    cont.resume(returning: view.map { InspectionJSON.encode(InspectionJSON.customer($0)) })
                }
            }
            guard let body else {
                return Self.response(.notFound, "application/json", Array(#"{"error":"customer not in memory on this member"}"#.utf8) + [0x0A])
            }
            return Self.response(.ok, "application/json", body)
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "tidepool"),
                              onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
        // Signals are the daemon's (SIGTERM stops the pipeline, SIGHUP reloads): none here.
        let serviceGroup = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        group.withLock { $0 = serviceGroup }
        if stopped.load(ordering: .relaxed) { return }
        try await serviceGroup.run()
    }

    static func response(_ status: HTTPResponse.Status, _ contentType: String, _ body: [UInt8]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
