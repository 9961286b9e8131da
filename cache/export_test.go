package cache

// NewTestCache is newTestCache for the package's external tests (package cache_test).
var NewTestCache = newTestCache
