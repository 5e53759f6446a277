// The playground's code editor: CodeMirror 6 with Python highlighting and inline problems.
// Bundled by ../build into ../static/editor.js; the page (../static/app.js) imports only
// createEditor from it, so the rest of the page needs no build step.
import { indentWithTab } from "@codemirror/commands";
import { python } from "@codemirror/lang-python";
import { indentUnit } from "@codemirror/language";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";

const theme = EditorView.theme({
  "&": { height: "100%", fontSize: "13.5px" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" },
  ".cm-content": { padding: "6px 0" },
});

// A problem from the API ({line, column, message}, both 1-based) as a range of the document.
function diagnostic(doc, problem) {
  const number = Math.min(Math.max(1, problem.line || 1), doc.lines);
  const line = doc.line(number);
  const from = Math.min(line.from + Math.max(0, (problem.column || 1) - 1), line.to);
  const to = from < line.to ? line.to : Math.min(from + 1, doc.length);
  return { from, to, severity: "error", message: problem.message, source: "treadle" };
}

export function createEditor(parent, { doc = "", onChange = () => {} } = {}) {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        basicSetup,
        python(),
        indentUnit.of("    "),
        keymap.of([indentWithTab]),
        lintGutter(),
        EditorView.lineWrapping,
        theme,
        EditorView.updateListener.of((update) => {
          if (update.docChanged) onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    getDoc: () => view.state.doc.toString(),
    setDoc(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    setProblems(problems) {
      const doc = view.state.doc;
      view.dispatch(setDiagnostics(view.state, problems.map((p) => diagnostic(doc, p))));
    },
    goTo(line, column) {
      const found = diagnostic(view.state.doc, { line, column, message: "" });
      view.dispatch({ selection: { anchor: found.from }, scrollIntoView: true });
      view.focus();
    },
    focus: () => view.focus(),
  };
}
