internal import NIOCore

/// Where an ingress connection's bytes for its client go: the client's own socket, or (HTTP/2) one stream's
/// response, read back from the HTTP/1.1 the connection writes.
protocol IngressClientOutput: Sendable {
    /// Sends `bytes` on; waits while the client reads slower than they come.
    func write(_ bytes: ByteBuffer) async throws
    /// Nothing more comes: the client's side ends once what was written went out.
    func finish()
}

extension NIOAsyncChannelOutboundWriter: IngressClientOutput where OutboundOut == ByteBuffer {}
