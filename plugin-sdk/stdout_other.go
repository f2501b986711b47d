//go:build !unix

package pluginsdk

// keepStdoutForHandshake does nothing where descriptors cannot be
// duplicated; os.Stdout is still redirected by go-plugin.
func keepStdoutForHandshake() {}
