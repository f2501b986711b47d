module github.com/restpipe/restpipe/host/gateway/client

go 1.26.0

require github.com/restpipe/restpipe/proto v0.0.0

// Developed in this repository beside the daemon: a release tags
// host/gateway/client/vX.Y.Z and proto/vX.Y.Z, and this line then goes.
replace github.com/restpipe/restpipe/proto => ../../../proto
