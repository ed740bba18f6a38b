// Package policy is the node-local security envelope of the agent: which host
// paths a container may mount (one directory directly under a VOLUME_ROOTS
// root, made without following symlinks; see Volumes), which containers the agent may
// touch (its own, by label), and the labels that mark them. The Docker layer
// consults it on every command; nothing that arrives over the wire can widen
// it, because it is built only from the agent's own configuration.
package policy
