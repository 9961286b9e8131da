package server

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// route is the webhook a request came to.
type route uint8

const (
	routeOA route = iota
	routeWeCom
	numRoutes
)

var routeNames = [numRoutes]string{"oa", "wecom"}

// kind is what a request was: a URL verification or a message of a type.
type kind uint8

const (
	kindVerify kind = iota
	kindText
	kindEvent
	kindImage
	kindVoice
	kindVideo
	kindLocation
	kindLink
	kindOther
	kindNone // rejected before the message type was known
	numKinds
)

var kindNames = [numKinds]string{"verify", "text", "event", "image", "voice", "video", "location", "link", "other", "none"}

// outcome is how a request was answered.
type outcome uint8

const (
	outcomeFound        outcome = iota // every number asked was found
	outcomePartial                     // some found, some not
	outcomeNotFound                    // none found
	outcomeHelp                        // the help text
	outcomeWelcome                     // a subscribe event's welcome
	outcomeSuccess                     // "success": nothing to say
	outcomeVerified                    // a URL verification passed
	outcomeStarting                    // the cache was not warm yet
	outcomeUnauthorised                // not on the allow-list
	outcomeRateLimited                 // over the per-OpenID limit
	outcomeUnavailable                 // a read-through failed
	outcomeRejected                    // refused: see wxlookup_rejected_total
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"found", "partial", "not_found", "help", "welcome", "success",
	"verified", "starting", "unauthorised", "rate_limited", "unavailable", "rejected"}

// reason is why a request was refused (wxlookup_rejected_total{reason}).
type reason uint8

const (
	reasonSignature reason = iota
	reasonTimestamp
	reasonDecrypt
	reasonAppID
	reasonTooLarge
	reasonBadXML
	reasonPlaintext // WXLOOKUP_REQUIRE_ENCRYPTION and the message came in plaintext
	reasonMethod
	reasonHeadersTooLarge // request line and headers beyond the read buffer (431)
	reasonTimeout         // the request did not arrive within ReadTimeout (408): slow clients
	reasonBadRequest      // not readable as HTTP, or a parameter no WeChat request has (400)
	reasonFieldTooLong    // an identifier, nonce or echostr over its cap (SPEC section 9)
	reasonReplay          // another message under a (timestamp, nonce) already used
	numReasons
)

var reasonNames = [numReasons]string{"signature", "timestamp", "decrypt", "appid", "too_large", "bad_xml", "plaintext", "method",
	"headers_too_large", "timeout", "bad_request", "field_too_long", "replay"}

// metrics are the webhook's Prometheus metrics, every label combination resolved up front so
// counting on the hot path is one atomic add.
type metrics struct {
	requests   [numRoutes][numKinds][numOutcomes]prometheus.Counter
	duration   prometheus.Histogram
	duplicates prometheus.Counter
	rejected   [numReasons]prometheus.Counter

	// The per-query counters (SPEC section 10), by query name: every name ever routed,
	// so that a query's counts go on across configuration changes.
	lookups, notFound *prometheus.CounterVec
	queriesMu         sync.Mutex
	queries           map[string]*queryCounters
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_requests_total",
		Help: "Webhook requests by route (oa, wecom), kind (verify or message type) and outcome.",
	}, []string{"route", "kind", "outcome"})
	for r := range numRoutes {
		for k := range numKinds {
			for o := range numOutcomes {
				m.requests[r][k][o] = requests.WithLabelValues(routeNames[r], kindNames[k], outcomeNames[o])
			}
		}
	}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "wxlookup_request_duration_seconds",
		Help: "Time from a webhook request's arrival to its reply, in seconds.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, .001, .0025, .005, .01, .025, .05,
			.1, .25, .5, 1, 2.5, 5},
	})
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wxlookup_duplicates_total",
		Help: "WeChat retries of a message already answered within the dedupe window, answered with the same reply.",
	})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_rejected_total",
		Help: "Webhook requests refused, by reason.",
	}, []string{"reason"})
	for r := range numReasons {
		m.rejected[r] = rejected.WithLabelValues(reasonNames[r])
	}
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_lookups_total",
		Help: "Numbers looked up, by query and result (found, not_found); served from memory = 1 - wxlookup_cache_misses_total / this.",
	}, []string{"query", "result"})
	m.notFound = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_not_found_total",
		Help: "Numbers looked up and not found, by query.",
	}, []string{"query"})
	m.queries = map[string]*queryCounters{}
	if reg != nil {
		reg.MustRegister(requests, m.duration, m.duplicates, rejected, m.lookups, m.notFound)
	}
	return m
}

// requestStats is a reading of the webhook's request counters for the status page.
type requestStats struct {
	count   uint64    // requests observed by the duration histogram
	buckets []uint64  // cumulative counts per upper bound
	bounds  []float64 // upper bounds in seconds
}

// stats reads the duration histogram.
func (m *metrics) stats() requestStats {
	var pb dto.Metric
	if err := m.duration.Write(&pb); err != nil || pb.Histogram == nil {
		return requestStats{}
	}
	h := pb.Histogram
	st := requestStats{count: h.GetSampleCount()}
	for _, b := range h.Bucket {
		st.bounds = append(st.bounds, b.GetUpperBound())
		st.buckets = append(st.buckets, b.GetCumulativeCount())
	}
	return st
}

// queryCounters count one query's lookups, a number each, by result
// (wxlookup_lookups_total{query,result}), and its misses (wxlookup_not_found_total{query}).
// A nil *queryCounters counts nothing.
type queryCounters struct {
	found, notFound, notFoundReport prometheus.Counter
}

// query returns the counters of the query named name, the same ones each time.
func (m *metrics) query(name string) *queryCounters {
	m.queriesMu.Lock()
	defer m.queriesMu.Unlock()
	q := m.queries[name]
	if q == nil {
		q = &queryCounters{
			found:          m.lookups.WithLabelValues(name, "found"),
			notFound:       m.lookups.WithLabelValues(name, "not_found"),
			notFoundReport: m.notFound.WithLabelValues(name),
		}
		m.queries[name] = q
	}
	return q
}

// lookupTotals reads how many numbers every query, past ones included, has looked up and
// how many it found, for the status page's ratios.
func (m *metrics) lookupTotals() (lookups, found uint64) {
	m.queriesMu.Lock()
	defer m.queriesMu.Unlock()
	for _, q := range m.queries {
		l, f := q.stats()
		lookups, found = lookups+l, found+f
	}
	return lookups, found
}

// countFound counts a number found.
func (q *queryCounters) countFound() {
	if q != nil {
		q.found.Inc()
	}
}

// countNotFound counts a number not found.
func (q *queryCounters) countNotFound() {
	if q != nil {
		q.notFound.Inc()
		q.notFoundReport.Inc()
	}
}

// stats reads how many numbers were looked up and how many of them found.
func (q *queryCounters) stats() (lookups, found uint64) {
	if q == nil {
		return 0, 0
	}
	f, nf := counterValue(q.found), counterValue(q.notFound)
	return f + nf, f
}

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) uint64 {
	var pb dto.Metric
	if err := c.Write(&pb); err != nil || pb.Counter == nil {
		return 0
	}
	return uint64(pb.Counter.GetValue())
}
