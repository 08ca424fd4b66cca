// Names read from files (zip entries, tensor names, tar paths, pickle globals) end up in messages
// printed to a terminal. A name holding ESC or a C1 control (U+009B is a one-byte CSI) could move the
// cursor, recolour or rewrite what the user sees; bidi overrides can make a name read backwards.
// Every such character is shown as an escape instead.

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** `s` with control, line-separator and bidi-override characters shown as \uXXXX. */
export function printable(s: string): string {
  return s.replace(UNSAFE, escape);
}

/** printable(), but newlines kept: for whole messages that are meant to span lines (usage texts). */
export function printableLines(s: string): string {
  return s.replace(UNSAFE_BUT_NEWLINE, escape);
}
