// Package webhook is the callback receiver: it answers Tencent Cloud IM
// Sns.CallbackFriendDelete callbacks and stores each accepted one as a
// FriendDeletion.
//
// A callback is POSTed to /callbacks/<namespace>/<name>, which selects the
// CallbackConfig. It is accepted only when every rule holds, checked in this
// order, and the first that fails decides the answer:
//
//  1. the CallbackConfig exists (404) and is not suspended (503);
//  2. the source address is inside allowedSourceCIDRs, when set (403);
//  3. the method is POST (405);
//  4. the query string parses (400);
//  5. SdkAppid equals the config's sdkAppID (403);
//  6. with auth, Sign and RequestTime are there (401), RequestTime is Unix
//     seconds within maxClockSkew of now (401), and only then, Sign is the
//     SHA-256 of token and RequestTime (401; 503 when the token cannot be
//     read);
//  7. contenttype is json (400);
//  8. a slot to read the body is free (503), the body fits the size limit
//     (413), is valid UTF-8 JSON with no member name twice in one object
//     (400), and it and the query both say CallbackCommand
//     Sns.CallbackFriendDelete (400);
//  9. PairList holds 1 to 2000 distinct pairs and every From_Account and
//     To_Account is 1 to 128 bytes of visible characters (400, see
//     accountProblem);
//  10. the FriendDeletion it makes fits in one stored object (413).
//
// An accepted callback is answered OK only after the API server has stored
// its FriendDeletion, or, with a spool, after the object is fsynced to the
// replica's spool because the API server did not take it within the first
// part of the budget for a reason that may pass; the replayer stores it
// later. Otherwise a write that fails or does not finish within the budget
// is answered 503 FAIL, and one that no retry can help (too large, invalid)
// at once. Names are deterministic, so a redelivered callback finds the
// object stored, or spooled, the first time (see friendDeletionName).
//
// What a request costs is bounded by what it sends: a body's buffer grows
// with the bytes that arrive, a fixed number of bodies are read at once, and
// the body is read as a stream of tokens, never decoded whole.
//
// Files: checks.go holds the rules in order; route.go, source.go,
// signature.go and payload.go each one of them; frienddeletion.go builds the
// object and its name; store.go writes it; keep.go decides between the API
// server and the spool; spool.go is the spool, replay.go its replayer;
// response.go answers; status.go batches the CallbackConfig status counters
// and the spool condition; server.go is the listener and its graceful
// shutdown; setup.go wires it all into a manager.
package webhook
