package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// envName is the environment variable that can set a flag:
// --server-name is RESTPIPE_SERVER_NAME.
func envName(flagName string) string {
	return "RESTPIPE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args into fs, then sets every flag that was not on the
// command line from its environment variable, when that is set.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp // fs has printed the usage the user asked for
		}
		return errUsage // fs has printed the usage or the problem
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		key := envName(f.Name)
		if v := getenv(key); v != "" {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	})
	return err
}

// newFlagSet returns a flag set for a command that reports to stderr.
func newFlagSet(name string, stderr io.Writer, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: restpipe %s [flags]\n\n%s\nFlags (each also RESTPIPE_<FLAG> in the environment):\n", name, help)
		fs.PrintDefaults()
	}
	return fs
}

// logFlags are the logging flags every node command has.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

// checkLogLevel reports whether s is a --log-level the logger takes.
func checkLogLevel(s string) error {
	if l := hclog.LevelFromString(s); l == hclog.NoLevel || l == hclog.Off {
		return errors.New("want trace, debug, info, warn or error")
	}
	return nil
}

// checkLogFormat reports whether s is a --log-format the logger takes.
func checkLogFormat(s string) error {
	if s != "text" && s != "json" {
		return errors.New("want text or json")
	}
	return nil
}

// logger builds the root logger the flags describe.
func (l *logFlags) logger(name string, w io.Writer) (hclog.Logger, error) {
	if err := checkLogLevel(l.level); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", l.level, err)
	}
	if err := checkLogFormat(l.format); err != nil {
		return nil, fmt.Errorf("--log-format %q: %w", l.format, err)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.LevelFromString(l.level),
		JSONFormat: l.format == "json",
		Output:     w,
	}), nil
}

// pluginConfigFlag collects --plugin-config NAME.KEY=VALUE settings, by
// plugin file name.
type pluginConfigFlag map[string]map[string]string

func (p pluginConfigFlag) String() string { return "" }

// Set adds one setting, or several separated by commas (the form the
// environment variable takes).
func (p pluginConfigFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kv, value, ok := strings.Cut(item, "=")
		name, key, ok2 := strings.Cut(kv, ".")
		if !ok || !ok2 || name == "" || key == "" {
			return fmt.Errorf("%q: want NAME.KEY=VALUE", item)
		}
		if p[name] == nil {
			p[name] = map[string]string{}
		}
		p[name][key] = value
	}
	return nil
}

// readFiles replaces each setting whose value is @FILE by the contents of
// FILE (without a final newline), so that secrets need not sit on a
// command line (readable by every local user in /proc/PID/cmdline) or in
// the configuration file. @@ starts a value that is a literal @.
func (p pluginConfigFlag) readFiles() error {
	for name, kv := range p {
		for k, v := range kv {
			switch {
			case strings.HasPrefix(v, "@@"):
				kv[k] = v[1:]
			case strings.HasPrefix(v, "@"):
				b, err := os.ReadFile(v[1:])
				if err != nil {
					return fmt.Errorf("plugin setting %s.%s: %w", name, k, err)
				}
				kv[k] = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			}
		}
	}
	return nil
}

// envFlag collects --plugin-env NAME or NAME=VALUE entries.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, ",") }

// Set adds one entry, or several separated by commas.
func (e *envFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, _, _ := strings.Cut(item, "=")
		if name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("%q: want NAME or NAME=VALUE", item)
		}
		*e = append(*e, item)
	}
	return nil
}

// resolve returns the entries as NAME=VALUE, taking a bare NAME's value
// from getenv (and leaving it out when unset).
func (e envFlag) resolve(getenv func(string) string) []string {
	var out []string
	for _, item := range e {
		if strings.Contains(item, "=") {
			out = append(out, item)
		} else if v := getenv(item); v != "" {
			out = append(out, item+"="+v)
		}
	}
	return out
}
