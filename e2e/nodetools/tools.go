//go:build tools

// Package nodetools pins the upstream programs the local cluster's tests
// use beside the cluster: the OCI registry that serves container images on
// loopback, crictl and critest (built with `go test -c`) for the real node,
// and helm for tenant contexts. Nothing here is our code; go.mod is the one
// place their versions are pinned.
package nodetools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
)
