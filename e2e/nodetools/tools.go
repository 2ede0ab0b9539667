//go:build tools

// Package nodetools pins the upstream programs the local node and its tests
// use beside the kubelet: the OCI registry that serves container images on
// loopback, crictl, and critest (built with `go test -c`). Nothing here is
// our code; go.mod is the one place their versions are pinned.
package nodetools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
)
