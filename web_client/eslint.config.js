// ESLint flat config: the recommended rules for the browser app (src/) and the build script.
// Run with `npm run lint` (scripts/test runs it after the build); errors fail the test command.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", "static/dist/"] },
  js.configs.recommended,
  {
    files: ["src/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      // beyond the recommended set: rules that catch mistakes, not style
      eqeqeq: ["error", "smart"],
      "array-callback-return": "error",
      "no-self-compare": "error",
      "no-template-curly-in-string": "error",
      "no-unmodified-loop-condition": "error",
      "no-unreachable-loop": "error",
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  {
    files: ["build.mjs", "eslint.config.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.node },
  },
];
