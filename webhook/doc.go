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
//  4. SdkAppid equals the config's sdkAppID (403);
//  5. with auth, Sign is the SHA-256 of token and RequestTime and
//     RequestTime is within maxClockSkew of now (401; 503 when the token
//     cannot be read);
//  6. contenttype is json (400);
//  7. the body fits the size limit (413), is valid UTF-8 JSON (400), and it
//     and the query both say CallbackCommand Sns.CallbackFriendDelete (400);
//  8. PairList holds at least one pair and every From_Account and
//     To_Account is 1 to 128 bytes of UTF-8 without control characters
//     (400).
//
// An accepted callback is answered OK only after the API server has stored
// its FriendDeletion; a write that fails or does not finish within the
// budget is answered 503 FAIL. Names are deterministic, so a redelivered
// callback finds the object stored the first time (see friendDeletionName).
//
// Files: checks.go holds the rules in order; route.go, source.go,
// signature.go and payload.go each one of them; frienddeletion.go builds the
// object and its name; store.go writes it; response.go answers; status.go
// batches the CallbackConfig status counters; server.go is the listener;
// setup.go wires it all into a manager.
package webhook
