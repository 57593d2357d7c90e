// A service that imports the server runtime sees the core runtime too (settings readers, logging, health, links).
@_exported public import OrreryRuntimeCore
