# Prints every shell command candidate of the Markdown files it reads, one per line:
#   FILE:LINE, block|inline, not-run reason (or empty), text (separated by \037)
# block: each line of a code block (fenced without a language or sh/bash/shell/console, or
# indented by 4+ spaces after a blank line), backslash continuations joined, "  # comment" and
# comment-only lines dropped. inline: each `code span` of a paragraph (spans may wrap).
# Whether a candidate is a command is decided by doc_commands.sh (its first word).
#
# Markers: "<!-- not run: REASON -->" on a line of its own applies to the next code block or
# paragraph (blank lines between are allowed); inside a paragraph it applies to that paragraph.
function emit(ln, kind, reason, text) {
    gsub(/\037/, " ", text)
    printf "%s:%d\037%s\037%s\037%s\n", FILENAME, ln, kind, reason, text
}
function strip_comment(s) {
    # a "#" after whitespace starts a comment ('vern/v1/+/alarm/#' keeps its "#")
    sub(/(^|[ \t]+)#.*$/, "", s)
    sub(/[ \t]+$/, "", s)
    sub(/^[ \t]+/, "", s)
    return s
}
function block_line(ln, s) {
    if (cont != "") {
        s = cont " " strip_comment(s)
        ln = cont_ln
    } else {
        s = strip_comment(s)
    }
    if (s ~ /\\$/) {
        sub(/[ \t]*\\$/, "", s)
        if (cont == "") cont_ln = ln
        cont = s
        return
    }
    cont = ""
    if (s != "") emit(ln, "block", block_reason, s)
}
function end_block() {
    if (cont != "") emit(cont_ln, "block", block_reason, cont)
    cont = ""
    block_reason = ""
}
function flush_para(   rest, span, reason) {
    if (para == "") return
    reason = para_reason
    if (reason == "") reason = pending
    pending = ""
    rest = para
    while (match(rest, /`[^`]+`/)) {
        span = substr(rest, RSTART + 1, RLENGTH - 2)
        rest = substr(rest, RSTART + RLENGTH)
        emit(para_ln, "inline", reason, span)
    }
    para = ""
    para_reason = ""
}
function marker_of(s,   r) {
    gsub(/`[^`]*`/, "", s)  # a marker quoted in a code span is not one
    if (!match(s, /<!-- *not run: *[^>]*-->/)) return ""
    r = substr(s, RSTART, RLENGTH)
    sub(/^<!-- *not run: */, "", r)
    sub(/ *-->$/, "", r)
    return r
}
FNR == 1 {
    fence = 0; indented = 0; blank = 1; after_marker = 0; para = ""; pending = ""
    para_reason = ""; cont = ""; block_reason = ""
}
{
    line = $0
    if (fence) {
        if (line ~ /^[ \t]*```/) { fence = 0; end_block(); next }
        if (fence_shell) block_line(FNR, line)
        next
    }
    if (line ~ /^[ \t]*```/) {
        flush_para()
        lang = line
        sub(/^[ \t]*```+[ \t]*/, "", lang)
        fence_shell = (lang == "" || lang ~ /^(sh|bash|shell|console)$/)
        fence = 1
        block_reason = pending
        pending = ""
        indented = 0
        next
    }
    if (line ~ /^[ \t]*$/) {
        flush_para()
        blank = 1
        next
    }
    match(line, /^ */)
    ind = RLENGTH
    if (indented) {
        if (ind >= indent_of_block) { block_line(FNR, substr(line, indent_of_block + 1)); next }
        end_block()
        indented = 0
    }
    if ((blank || after_marker) && ind >= 4 && para == "") {
        indented = 1
        indent_of_block = ind
        block_reason = pending
        pending = ""
        after_marker = 0
        blank = 0
        block_line(FNR, substr(line, ind + 1))
        next
    }
    blank = 0
    m = marker_of(line)
    if (m != "" && para == "" && line ~ /^[ \t]*<!--.*-->[ \t]*$/) {
        # a marker on a line of its own: for what follows
        pending = m
        after_marker = 1
        next
    }
    after_marker = 0
    if (para != "" && line ~ /^[ \t]*([-*+]|[0-9]+\.)[ \t]/) flush_para()  # a list item: its own paragraph
    if (para == "") { para_ln = FNR; para = line } else { para = para " " line }
    if (m != "") para_reason = (para_reason == "" ? m : para_reason "; " m)
}
END { flush_para(); if (fence || indented) end_block() }
