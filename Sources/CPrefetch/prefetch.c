/* CPrefetch is a header-only target (include/CPrefetch.h); SwiftPM needs one source file. */
#include "CPrefetch.h"
