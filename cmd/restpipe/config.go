package main

import (
	"flag"

	"github.com/restpipe/restpipe/cmd/restpipe/internal/configfile"
)

// The configuration file (--config FILE) of `restpipe server` and
// `restpipe client` is HCL, read by package configfile against the node's
// own flag set: what is here is what the file means for a node. The file
// only fills flags that neither the command line nor the environment set,
// and plugin settings that --plugin-config did not give. docs/config.md is
// the operator's description; keep the two in step.

// configPaths are the flags whose relative paths in a configuration file
// are taken relative to the file's directory, with the prefix that makes a
// value a path: --http is one only for a unix: socket.
var configPaths = map[string]string{
	"ca": "", "cert": "", "key": "", "plugins": "", "plugin-checksums": "", "policy": "",
	"http": "unix:",
}

// configChecks validate the values of flags whose Set accepts anything, so
// that a bad value in the file is reported at its line.
var configChecks = map[string]func(string) error{
	"log-level":  checkLogLevel,
	"log-format": checkLogFormat,
}

// configNotKeys are flags that have no key in the file, and why.
var configNotKeys = map[string]string{
	"config":        "a configuration file cannot name another; give --config on the command line or as RESTPIPE_CONFIG",
	"plugin-config": `not a key: write a block per plugin, plugin "NAME" { KEY = "VALUE" }`,
}

// configSchema is what the configuration file of a node of role may hold.
func configSchema(role string) *configfile.Schema {
	return &configfile.Schema{
		Role:       role,
		Flags:      roleFlags(role),
		OtherRole:  otherRole(role),
		OtherFlags: roleFlags(otherRole(role)),
		NotKeys:    configNotKeys,
		Paths:      configPaths,
		Checks:     configChecks,
	}
}

// loadConfigFile reads and checks the configuration file path of a node of
// role ("server" or "client"), reporting every problem at once.
func loadConfigFile(path, role string) (*configfile.File, error) {
	return configfile.Load(path, configSchema(role))
}

// roleFlags returns the flag set of a node of role, to learn its keys.
func roleFlags(role string) *flag.FlagSet {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs, role)
	return fs
}

// otherRole is the role that is not role.
func otherRole(role string) string {
	if role == "server" {
		return "client"
	}
	return "server"
}
