/**
 * A test application's own bin: the command line with its registrations, as
 * `ChronicleCli.run` gives an application.
 */
import * as ChronicleCli from "../src/ChronicleCli.js"
import { registrations } from "./cli-app.js"

ChronicleCli.run({ name: "orders-cli", registrations, daemon: { pollInterval: "100 millis" } })
