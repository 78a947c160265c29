// Package internal holds nothing itself; its subpackages are the code shared
// by two or more parts of Ambient Lite (see internal/README.md).
package internal
