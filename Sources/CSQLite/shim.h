#ifndef TIDEPOOL_CSQLITE_SHIM_H
#define TIDEPOOL_CSQLITE_SHIM_H
#include <sqlite3.h>
/* SQLITE_TRANSIENT is a macro with a cast, which Swift cannot import. */
static inline sqlite3_destructor_type tp_sqlite_transient(void) { return SQLITE_TRANSIENT; }
#endif
