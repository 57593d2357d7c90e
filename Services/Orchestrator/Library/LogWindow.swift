internal import Foundation
internal import OrreryProto

/// Which of a deployment's stored output a log request returns: what arrived since a moment, one stream or both,
/// and the last lines of each replica's stream. Pure: it works on the pieces as stored, in the order they arrived.
enum LogWindow {
    typealias Piece = (line: Orrery_Orchestrator_V1_LogLine, at: Date)

    /// The most lines `tail_lines` may ask for.
    static let maximumTailLines = 100_000

    /// The pieces to send, in arrival order: received at or after `since`, of `stream` (both when unspecified),
    /// and — when `tailLines` > 0 — only the last `tailLines` lines of each replica's stream (the first piece kept
    /// may be cut at a line's start).
    static func select(
        _ pieces: [Piece], since: Date?, stream: Orrery_Orchestrator_V1_LogStream, tailLines: Int
    ) -> [Piece] {
        let chosen = pieces.filter { piece in
            (since.map { piece.at >= $0 } ?? true) && (stream == .unspecified || piece.line.stream == stream)
        }
        guard tailLines > 0 else { return chosen }
        // Per replica and stream: how many bytes, from the end, hold its last `tailLines` lines.
        var indicesByStream: [String: [Int]] = [:]
        for (index, piece) in chosen.enumerated() {
            indicesByStream[
                "\(piece.line.allocation)\u{0}\(piece.line.replica)\u{0}\(piece.line.stream.rawValue)", default: []
            ]
            .append(index)
        }
        var kept = chosen.map { Optional($0) }
        for indices in indicesByStream.values {
            var linesLeft = tailLines
            var isLastByte = true
            var cut: (piece: Int, offset: Int)?
            search: for index in indices.reversed() {
                let data = Array(chosen[index].line.data)
                for offset in stride(from: data.count - 1, through: 0, by: -1) {
                    defer { isLastByte = false }
                    // A line ends at each newline but the stream's very last byte (which ends the last line).
                    guard data[offset] == UInt8(ascii: "\n"), !isLastByte else { continue }
                    linesLeft -= 1
                    if linesLeft == 0 {
                        cut = (index, offset + 1)
                        break search
                    }
                }
            }
            guard let cut else { continue }  // fewer lines than asked for: all of them
            for index in indices where index < cut.piece { kept[index] = nil }
            if var piece = kept[cut.piece] {
                piece.line.data = Data(piece.line.data.dropFirst(cut.offset))
                kept[cut.piece] = piece.line.data.isEmpty ? nil : piece
            }
        }
        return kept.compactMap { $0 }
    }
}
