// SwiftPM needs a source file in a C target; the module only re-exports the system zstd.
