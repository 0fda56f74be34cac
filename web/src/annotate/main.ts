// The annotator's shell: log-in when auth is on (as the dashboard), the header, then the page.
import "../style.css";
import "./annotate.css";
import { Api, ApiError } from "../api";
import { h } from "../dom";
import { loginPage } from "../pages/login";
import { annotator } from "./annotator";

const CLIENT_KEY = "labelloop.client_id";
const api = new Api();
const top = document.getElementById("top") as HTMLElement;
const main = document.getElementById("page") as HTMLElement;

/** With auth off, leases and labels tell annotators apart by the client's id: the name typed here. */
function clientBox(): HTMLElement {
  const input = h("input", {
    name: "client_id",
    placeholder: "your name",
    "aria-label": "Annotator name (client id)",
    "data-testid": "client-id",
    size: 10,
    value: localStorage.getItem(CLIENT_KEY) ?? "",
  });
  input.addEventListener("change", () => localStorage.setItem(CLIENT_KEY, input.value.trim()));
  return h("label", { class: "client" }, "annotator ", input);
}

function clientId(): string | undefined {
  if (api.authEnabled) return undefined; // the server takes the logged-in user
  return localStorage.getItem(CLIENT_KEY) || undefined;
}

function header(user: string | null): void {
  const brand = h("span", { class: "brand" }, "labelloop");
  if (user === null) {
    top.replaceChildren(brand);
    return;
  }
  top.replaceChildren(
    brand,
    h("nav", {}, h("a", { href: "/" }, "Dashboard"), h("a", { href: "/annotate/", class: "current" }, "Annotate")),
    h(
      "span",
      { class: "who" },
      api.authEnabled ? h("span", { "data-testid": "user" }, user) : clientBox(),
      api.authEnabled
        ? h(
            "button",
            {
              type: "button",
              "data-testid": "logout",
              onclick: () => {
                api.logout();
                location.reload();
              },
            },
            "Log out",
          )
        : null,
    ),
  );
}

async function start(): Promise<void> {
  header(null);
  delete main.dataset.ready;
  if (api.authEnabled && !api.loggedIn) {
    document.body.dataset.page = "login";
    await loginPage(main, api, () => void start());
    return;
  }
  try {
    const me = await api.who();
    document.body.dataset.page = "annotate";
    header(me.username);
    await annotator(main, api, clientId);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // back at the log-in form
    main.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not start the annotator: ${String(error)}`));
  }
}

api.onUnauthorized = () => void start();
window.addEventListener("hashchange", () => location.reload());
await api.detectAuth();
await start();
