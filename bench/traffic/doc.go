// Package traffic makes the requests of a benchmark run as WeChat would send them: signed
// text messages, in plaintext or safe mode (encrypted), each with its own MsgId and one of
// many OpenIDs, asking for workpiece numbers drawn from a Zipf distribution over the
// seeded table with a share of numbers that are not in it. It also checks the replies.
//
// Requests are built before a run, into a few large buffers, so that the load generator
// spends no CPU on signing or encryption while it measures.
package traffic
