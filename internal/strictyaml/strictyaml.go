// Package strictyaml is the one YAML decoder of Quartet's files: `quartet
// serve --config`, sweep specs and request mixes. It is strict, because a
// misspelled key that is silently ignored runs an experiment or a server
// with a default nobody chose: every key must be known, a key may not
// repeat, a file holds one document, and errors name the line and the key
// in the file's terms rather than in Go's.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Node is a YAML node, for types that decode themselves (yaml.Unmarshaler).
type Node = yaml.Node

// Node kinds such a type looks at.
const (
	MappingNode = yaml.MappingNode
	ScalarNode  = yaml.ScalarNode
)

// Decode decodes the YAML document in data into v, rejecting unknown keys
// (yaml's KnownFields) and a second document. An empty document leaves v
// as it is.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return explain(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document (a line with ---?)")
	}
	return nil
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type .+$`)
	wrongType    = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// explain rewrites yaml's type errors, which speak of Go types, in the
// file's terms.
func explain(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if g := unknownField.FindStringSubmatch(m); g != nil {
			m = fmt.Sprintf("line %s: unknown key %q", g[1], g[2])
		} else if g := wrongType.FindStringSubmatch(m); g != nil {
			m = fmt.Sprintf("line %s: %q is not %s", g[1], g[3], kind(g[4]))
		}
		msgs[i] = m
	}
	return errors.New(strings.Join(msgs, "; "))
}

func kind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "time.Duration":
		return "a duration (like 1.5s)"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.Contains(goType, "."):
		return "a mapping of key: value"
	}
	return "a " + goType
}
