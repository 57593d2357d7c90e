import ArgumentParser
import GRPCCore
import NIOSSL

/// A service that could not be reached over TLS (or without it), told as what to do about it: the gRPC error's cause
/// (a certificate the given CA does not vouch for, a certificate for another address, TLS spoken to a plaintext port
/// or plaintext to a TLS one) said in words, the original error kept after them.
struct ConnectionTrouble: Error, CustomStringConvertible {
    let advice: String
    let underlying: any Error

    var description: String { "\(advice)\n  (\(underlying))" }

    /// `error` with advice, or nil when it is no connection trouble this knows.
    static func explaining(_ error: any Error) -> ConnectionTrouble? {
        guard let rpc = error as? RPCError, rpc.code == .unavailable else { return nil }
        var cause = rpc.cause
        while let current = cause {
            if let advice = advice(for: current) { return ConnectionTrouble(advice: advice, underlying: error) }
            cause = (current as? RPCError)?.cause
        }
        if rpc.cause == nil, rpc.message.contains("before completing the HTTP/2 connection preface") {
            return ConnectionTrouble(
                advice:
                    "the service closed the connection before speaking gRPC: it may serve TLS only — give its CA with --tls-ca (or ORRERY_TLS_CA, or `orrery context set NAME --tls-ca FILE`)",
                underlying: error)
        }
        return nil
    }

    private static func advice(for cause: any Error) -> String? {
        if let extra = cause as? NIOSSLExtraError, extra == .failedToValidateHostname {
            return
                "the service's TLS certificate does not name the address called: call it by a name or IP address its certificate lists"
        }
        guard let ssl = cause as? NIOSSLError, case .handshakeFailed(let failure) = ssl else { return nil }
        let detail = "\(failure)"
        if detail.contains("CERTIFICATE_VERIFY_FAILED") {
            return
                "the service's TLS certificate is not signed by a CA in --tls-ca (or ORRERY_TLS_CA, or the context's): give the CA that issued it"
        }
        if detail.contains("WRONG_VERSION_NUMBER") || detail.contains("EOF during handshake") {
            return
                "the TLS handshake failed: the service may not serve TLS on this port — call it without --tls-ca (and without ORRERY_TLS_CA), or check the port"
        }
        return "the TLS handshake with the service failed"
    }
}
