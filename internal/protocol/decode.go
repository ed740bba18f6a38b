package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Decoding errors, matched with errors.Is.
var (
	ErrMalformed   = errors.New("malformed frame")
	ErrUnknownType = errors.New("unknown message type")
)

// DecodeError reports a frame that could not be decoded. ID is the frame's
// "id" when one could be read, so the agent can answer it with an invalid
// command_result.
type DecodeError struct {
	Type string
	ID   string
	Err  error
}

func (e *DecodeError) Error() string {
	if e.Type == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s message: %v", e.Type, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Decode parses one frame into its message type (a value, e.g. Command or
// Heartbeat). Unknown fields are ignored. A command is decoded but not
// validated; call Command.Validate.
func Decode(frame []byte) (Message, error) {
	var head struct {
		Type any `json:"type"`
		ID   any `json:"id"`
	}
	if err := json.Unmarshal(frame, &head); err != nil {
		return nil, &DecodeError{Err: fmt.Errorf("%w: %v", ErrMalformed, err)}
	}
	typ, _ := head.Type.(string)
	id, _ := head.ID.(string)
	if typ == "" {
		return nil, &DecodeError{ID: id, Err: fmt.Errorf("%w: no \"type\" string", ErrMalformed)}
	}
	var m Message
	var err error
	switch typ {
	case TypePing:
		m, err = decodeAs[Ping](frame)
	case TypePong:
		m, err = decodeAs[Pong](frame)
	case TypeCommand:
		m, err = decodeAs[Command](frame)
	case TypeCancel:
		m, err = decodeAs[Cancel](frame)
	case TypeCommandResult:
		m, err = decodeAs[CommandResult](frame)
	case TypeAgentIdentify:
		m, err = decodeAs[AgentIdentify](frame)
	case TypeHeartbeat:
		m, err = decodeAs[Heartbeat](frame)
	case TypeLog:
		m, err = decodeAs[LogMessage](frame)
	case TypeCommandProgress:
		m, err = decodeAs[CommandProgress](frame)
	case TypeContainerEvent:
		m, err = decodeAs[ContainerEvent](frame)
	case TypeInventory:
		m, err = decodeAs[Inventory](frame)
	case TypeTokenRefresh:
		m, err = decodeAs[TokenRefresh](frame)
	default:
		var ok bool
		if m, ok, err = decodeConsole(typ, frame); !ok {
			return nil, &DecodeError{Type: typ, ID: id, Err: ErrUnknownType}
		}
	}
	if err != nil {
		return nil, &DecodeError{Type: typ, ID: id, Err: fmt.Errorf("%w: %v", ErrMalformed, fieldError(err))}
	}
	return m, nil
}

// DecodeCommand decodes a frame whose "type" is known to be "command" (a
// caller that read it already): one pass over the frame where Decode makes
// two. It fails as Decode would, with Decode's error.
func DecodeCommand(frame []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(frame, &c); err != nil {
		// Rare: Decode reads the id and type again for its error.
		if _, derr := Decode(frame); derr != nil {
			return Command{}, derr
		}
		return Command{}, &DecodeError{Type: TypeCommand, Err: fmt.Errorf("%w: %v", ErrMalformed, fieldError(err))}
	}
	return c, nil
}

func decodeAs[T Message](frame []byte) (Message, error) {
	var v T
	err := json.Unmarshal(frame, &v)
	return v, err
}

// fieldError rewrites encoding/json's type errors as "field X: want T, got U".
func fieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %q: want %s, got %s", te.Field, te.Type, te.Value)
	}
	return err
}
