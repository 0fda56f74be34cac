// The log-in form: POST /auth/token (OAuth 2 password grant), then the page the user asked for.
import { type Api, ApiError } from "../api";
import { h, say } from "../dom";

export async function loginPage(main: HTMLElement, api: Api, done: () => void): Promise<void> {
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { class: "message" });
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h(
    "form",
    {
      class: "card login",
      onsubmit: async (event: Event) => {
        event.preventDefault();
        submit.disabled = true;
        try {
          await api.login(user.value, password.value);
          done();
        } catch (error) {
          say(message, error instanceof ApiError ? error.detail : String(error), true);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h2", {}, "Log in to labelloop"),
    h("label", {}, "User name", user),
    h("label", {}, "Password", password),
    submit,
    message,
  );
  main.replaceChildren(form);
  main.dataset.ready = "";
}
