package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxChildName is the longest name a Job can have: its name becomes a label
// value on its pods.
const maxChildName = 63

// jobName is the name of the Job a job step creates for a FriendDeletion.
// The same FriendDeletion and step always give the same name, so a restart
// finds the Job it created instead of creating another.
func jobName(fdName, step string) string { return childName(fdName, step) }

// pairsConfigMapName is the name of the ConfigMap holding a FriendDeletion's
// pairs file, shared by its job steps.
func pairsConfigMapName(fdName string) string { return childName(fdName, "pairs") }

// childName is "<parent>-<suffix>" when that is a DNS label of at most 63
// characters. Otherwise the parent is cut (dots become dashes) and a hash of
// both parts keeps the name unique.
func childName(parent, suffix string) string {
	name := parent + "-" + suffix
	if len(name) <= maxChildName && !strings.Contains(parent, ".") {
		return name
	}
	sum := sha256.Sum256([]byte(parent + "/" + suffix))
	hash := hex.EncodeToString(sum[:4])
	keep := maxChildName - len(suffix) - len(hash) - 2
	p := strings.ReplaceAll(parent, ".", "-")
	if len(p) > keep {
		p = p[:keep]
	}
	p = strings.TrimRight(p, "-")
	return p + "-" + suffix + "-" + hash
}
