package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Reply is a RESP2 answer: Str for a simple or bulk string, Int for an
// integer, Arr for an array, Err for an error reply, Nil for a null.
type Reply struct {
	Str string
	Int int64
	Arr []Reply
	Err string
	Nil bool
}

// Map reads a flat array of field, value, field, value... (as SENTINEL
// answers) as a map.
func (r Reply) Map() map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(r.Arr); i += 2 {
		m[r.Arr[i].Str] = r.Arr[i+1].Str
	}
	return m
}

// Field returns the value of "name:value" in an INFO-style answer.
func (r Reply) Field(name string) string {
	for line := range strings.SplitSeq(r.Str, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// do writes one command and reads one answer.
func do(c net.Conn, args ...string) (Reply, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return Reply{}, err
	}
	return read(bufio.NewReader(c))
}

func read(r *bufio.Reader) (Reply, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return Reply{}, errors.New("empty RESP line")
	}
	switch body := line[1:]; line[0] {
	case '+':
		return Reply{Str: body}, nil
	case '-':
		return Reply{Err: body}, nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		return Reply{Int: n}, err
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return Reply{Nil: true}, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Reply{}, err
		}
		return Reply{Str: string(buf[:n])}, nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return Reply{Nil: true}, err
		}
		out := Reply{Arr: make([]Reply, 0, n)}
		for range n {
			e, err := read(r)
			if err != nil {
				return Reply{}, err
			}
			out.Arr = append(out.Arr, e)
		}
		return out, nil
	}
	return Reply{}, fmt.Errorf("unexpected RESP type %q", line[0])
}
