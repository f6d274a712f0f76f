package lint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// document is one object of an input: its JSON, as kubectl would send it,
// and the line of each of its fields.
type document struct {
	line  int            // the object's first line
	last  int            // the document's last line, for a parse error
	json  []byte         // nil for an empty document
	lines map[string]int // field path ("spec.containers[0].name") to line
	err   error          // the document does not parse
}

// lineOf returns the line of path, or of the nearest field above it that is
// in the document.
func (d *document) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return d.line
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// errLine is the line that the document's parse error names (shiftLine
// made it the input's), else the document's first; never past the
// document's last.
func (d *document) errLine() int {
	if m := yamlLine.FindStringSubmatch(d.err.Error()); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n >= d.line {
			return min(n, max(d.last, d.line))
		}
	}
	return d.line
}

// documents splits an input into its documents: YAML documents separated
// by "---" lines, or a stream of JSON values. A document that does not
// parse is returned with its error, and the others are still read.
func documents(data []byte) []document {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return jsonDocuments(data)
	}
	var docs []document
	start, line := 0, 1
	var buf []byte
	flush := func() {
		if d, ok := yamlDocument(buf, start); ok {
			docs = append(docs, d)
		}
	}
	for _, l := range bytes.SplitAfter(data, []byte("\n")) {
		if sep := bytes.TrimRight(l, "\r\n"); bytes.HasPrefix(sep, []byte("---")) &&
			(len(sep) == 3 || sep[3] == ' ' || sep[3] == '\t') {
			flush()
			buf, start = nil, line+1
			if rest := bytes.TrimSpace(sep[3:]); len(rest) > 0 && rest[0] != '#' {
				// "--- {a: b}": the document starts on the separator's line.
				// Keep the line's own ending: a parser names the line
				// past the input's last if we add one it does not have.
				buf, start = append(buf, l[3:]...), line
			}
		} else {
			if buf == nil {
				start = line
			}
			buf = append(buf, l...)
		}
		line++
	}
	flush()
	return docs
}

// yamlDocument converts one YAML document; ok is false for an empty one.
func yamlDocument(src []byte, first int) (document, bool) {
	d := document{line: first, last: first + bytes.Count(src, []byte("\n")), lines: map[string]int{}}
	at := parserLines(src, first)
	var root yamlv3.Node
	if err := yamlv3.Unmarshal(src, &root); err != nil {
		d.err = shiftLine(err, at)
		return d, true
	}
	if len(root.Content) == 0 || root.Content[0].Tag == "!!null" {
		return d, false
	}
	record(root.Content[0], "", at, d.lines)
	d.line = at(root.Content[0].Line)
	j, err := yaml.YAMLToJSON(src)
	if err != nil {
		d.err = shiftLine(err, at)
		return d, true
	}
	d.json = j
	return d, true
}

// shiftLine makes a parser's "line N" the input's line (at).
func shiftLine(err error, at func(int) int) error {
	msg := yamlLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(m[len("line "):])
		return "line " + strconv.Itoa(at(n))
	})
	return fmt.Errorf("%s", msg)
}

// parserLines maps the YAML parser's line numbers in src, which start at 1,
// to the input's, where src starts on line first. The parser also ends a
// line at a lone "\r", NEL, LS and PS; everyone else (editors, grep, this
// package's findings) counts "\n" only. A line past src's end is its last.
func parserLines(src []byte, first int) func(int) int {
	m := []int{first} // m[n-1]: the input's line of the parser's line n
	line := first
	for i := 0; i < len(src); i++ {
		switch {
		case src[i] == '\n':
			line++
		case src[i] == '\r' && i+1 < len(src) && src[i+1] == '\n':
			line++
			i++
		case src[i] == '\r', bytes.HasPrefix(src[i:], []byte("\u0085")),
			bytes.HasPrefix(src[i:], []byte("\u2028")), bytes.HasPrefix(src[i:], []byte("\u2029")):
		default:
			continue
		}
		m = append(m, line)
	}
	return func(n int) int {
		return m[min(max(n, 1), len(m))-1]
	}
}

// jsonDocuments reads a stream of JSON values.
func jsonDocuments(data []byte) []document {
	var docs []document
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		off := dec.InputOffset()
		if err := dec.Decode(&raw); err != nil {
			if err.Error() == "EOF" {
				return docs
			}
			first := 1 + bytes.Count(data[:off], []byte("\n"))
			docs = append(docs, document{line: first, err: err})
			return docs
		}
		// The value starts after any white space at off.
		start := int(off) + len(data[off:]) - len(bytes.TrimLeft(data[off:], " \t\r\n"))
		first := 1 + bytes.Count(data[:start], []byte("\n"))
		d := document{line: first, json: raw, lines: map[string]int{}}
		var root yamlv3.Node
		if yamlv3.Unmarshal(raw, &root) == nil && len(root.Content) > 0 {
			record(root.Content[0], "", parserLines(raw, first), d.lines)
		}
		docs = append(docs, d)
	}
}

// record notes the line of every field under n.
func record(n *yamlv3.Node, path string, at func(int) int, lines map[string]int) {
	switch n.Kind {
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[p] = at(k.Line)
			record(v, p, at, lines)
		}
	case yamlv3.SequenceNode:
		for i, v := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			lines[p] = at(v.Line)
			record(v, p, at, lines)
		}
	}
	// An alias is not followed: its fields are at its anchor, and an alias
	// inside its own anchor ("a: &x [*x]") would never end.
}
