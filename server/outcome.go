package server

// OutcomeHeader is the response header that names how the webhook answered a message: an
// outcome label of wxlookup_requests_total (found, partial, not_found, help, welcome,
// success, starting, unauthorised, rate_limited, unavailable). WeChat ignores it; a client
// such as `wxlookup ask` reads it to tell an answer from a refusal without recognising
// reply texts, which are configurable.
const OutcomeHeader = "X-Wxlookup-Outcome"

// outcomeHeaderKey and outcomeValues are OutcomeHeader and the outcome names as the bytes
// fasthttp's SetCanonical takes, so setting the header allocates nothing.
var (
	outcomeHeaderKey = []byte(OutcomeHeader)
	outcomeValues    = func() (v [numOutcomes][]byte) {
		for o := range numOutcomes {
			v[o] = []byte(outcomeNames[o])
		}
		return v
	}()
)
