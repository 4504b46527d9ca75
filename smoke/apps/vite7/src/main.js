import { startPage } from "./counter.js";

startPage("smoke-vite7");
