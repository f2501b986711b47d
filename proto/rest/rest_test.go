package rest

import (
	"encoding/json"
	"testing"
)

// TestKindTable: every kind has its own return code and a status of an
// error; an unknown kind answers as handler_failed.
func TestKindTable(t *testing.T) {
	codes := map[int]Kind{}
	for _, k := range Kinds() {
		if !k.Known() || k.Status() < 400 || k.Status() > 599 {
			t.Errorf("%s: known %v, status %d", k, k.Known(), k.Status())
		}
		if prev, dup := codes[k.ReturnCode()]; dup {
			t.Errorf("%s and %s share return code %d", k, prev, k.ReturnCode())
		}
		codes[k.ReturnCode()] = k
	}
	if len(Kinds()) != 11 || Kinds()[0] != KindBadRequest {
		t.Errorf("Kinds() = %v, want the SPEC's 11 from bad_request", Kinds())
	}
	if u := Kind("nope"); u.Known() || u.Status() != 500 || u.ReturnCode() != KindHandlerFailed.ReturnCode() {
		t.Errorf("an unknown kind: known %v, status %d, code %d", u.Known(), u.Status(), u.ReturnCode())
	}
}

// TestErrorBodyJSON pins the error body's shape: RestPipe's exception at
// the top level too.
func TestErrorBodyJSON(t *testing.T) {
	var b ErrorBody
	b.Error.Kind, b.Error.Message = KindHandlerFailed, "it broke"
	b.Error.Exception = &Exception{Message: "it broke", Class: "ValueError"}
	b.Exception = b.Error.Exception
	got, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"error":{"kind":"handler_failed","message":"it broke","exception":{"message":"it broke","class":"ValueError"}},"exception":{"message":"it broke","class":"ValueError"}}`
	if string(got) != want {
		t.Errorf("error body\n%s\nwant\n%s", got, want)
	}
}
