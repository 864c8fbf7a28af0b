package deploy

import (
	"fmt"
	"strings"
)

// selector is one metric a PromQL expression reads, with its label matchers as written
// (without braces; empty when none).
type selector struct {
	name     string
	matchers string
}

// promqlKeywords are identifiers that are not metric names: binary operators, modifiers,
// the words that introduce label lists, and the aggregation operators (which may be
// followed by "by (…)" rather than by their parenthesised argument).
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// labelListWords are followed by a parenthesised list of label names, not of expressions.
var labelListWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlSelectors lists the metrics a PromQL expression (as alert rules and Grafana panels
// write them, Grafana's $variables included) reads. It is a scanner, not a parser: an
// identifier is a metric unless it calls a function, is a keyword, or names labels (in
// braces or after by/without/on/ignoring/group_left/group_right); strings, durations in
// brackets and numbers are skipped. It fails on unbalanced brackets and unterminated strings.
func promqlSelectors(expr string) ([]selector, error) {
	var out []selector
	i := 0
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string at %d in %q", i, expr)
			}
			i += end + 2
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unbalanced [ at %d in %q", i, expr)
			}
			i += end + 1
		case c == '{':
			// A selector by labels alone ({__name__=...}) names no metric we can check.
			end, err := closingBrace(expr, i)
			if err != nil {
				return nil, err
			}
			i = end + 1
		case c == '$':
			i++
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '{' || expr[i] == '}') {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentByte(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(expr, i)
			switch {
			case labelListWords[word]:
				if next < len(expr) && expr[next] == '(' {
					end := strings.IndexByte(expr[next:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unbalanced ( after %s in %q", word, expr)
					}
					i = next + end + 1
				}
			case promqlKeywords[word]:
			case next < len(expr) && expr[next] == '(':
				// a function or an aggregation
			default:
				s := selector{name: word}
				if next < len(expr) && expr[next] == '{' {
					end, err := closingBrace(expr, next)
					if err != nil {
						return nil, err
					}
					s.matchers = expr[next+1 : end]
					i = end + 1
				}
				out = append(out, s)
			}
		default:
			i++
		}
	}
	return out, nil
}

// closingBrace returns the index of the } closing the { at open, skipping quoted values.
func closingBrace(expr string, open int) (int, error) {
	for i := open + 1; i < len(expr); i++ {
		switch expr[i] {
		case '"', '\'', '`':
			end := strings.IndexByte(expr[i+1:], expr[i])
			if end < 0 {
				return 0, fmt.Errorf("unterminated string in %q", expr)
			}
			i += end + 1
		case '}':
			return i, nil
		}
	}
	return 0, fmt.Errorf("unbalanced { at %d in %q", open, expr)
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentByte(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
