// Tools of the local cluster (`make cluster`): certificates, the node's
// namespaces, the image step and the small images it packs. Kept out of the
// main module so that go-containerregistry stays out of it.
module github.com/meterr/meterr-operator/hack/cluster/tools

go 1.26.0

require (
	github.com/google/go-containerregistry v0.22.1
	golang.org/x/sys v0.50.0
)

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
