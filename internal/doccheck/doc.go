// Package doccheck holds the checks of the repository's Markdown: every
// relative link resolves to a file of the repository (and a #fragment to one
// of its headings), and none points outside it, so a clone carries all of
// its documentation.
package doccheck
