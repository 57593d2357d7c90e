// SwiftPM needs a source file in a C target; the module only exposes glibc's <malloc.h>.
