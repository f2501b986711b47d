package plugins

import (
	"strings"
	"testing"
)

func TestParseChecksums(t *testing.T) {
	const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	got, err := ParseChecksums(strings.NewReader("# pinned plugins\n\n" + sum + "  plugins/time\n" + sum + " *cat\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got["time"]) != 32 || len(got["cat"]) != 32 {
		t.Errorf("ParseChecksums = %v", got)
	}
	for _, bad := range []string{"nothex  time\n", sum + "\n", sum[:10] + "  time\n", sum + "  a\n" + sum + "  dir/a\n"} {
		if _, err := ParseChecksums(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseChecksums(%q) succeeded, want an error", bad)
		}
	}
}
