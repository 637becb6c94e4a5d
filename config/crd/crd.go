// Package crd holds the operator's CustomResourceDefinitions, as generated
// into bases/ by `make manifests`, for programs that install them: the
// test control plane of controllers/testenv, in this module or another.
package crd

import "embed"

// Bases holds bases/*.yaml, one CustomResourceDefinition per file.
//
//go:embed bases/*.yaml
var Bases embed.FS
