import * as assert from "node:assert/strict";

import { followedDocument } from "../src/documents";

const file = { uri: { scheme: "file" } };
const other = { uri: { scheme: "file" } };
const output = { uri: { scheme: "output" } };

describe("the document the status bar follows", () => {
  it("is the active file", () => {
    assert.equal(followedDocument(file, [file], undefined), file);
    assert.equal(followedDocument(other, [file, other], file), other);
  });

  it("stays the file still shown while the Output view has focus", () => {
    assert.equal(followedDocument(output, [file, output], file), file);
    assert.equal(followedDocument(undefined, [file], file), file);
  });

  it("is none once no editor shows the file", () => {
    assert.equal(followedDocument(output, [output], file), undefined);
    assert.equal(followedDocument(undefined, [], file), undefined);
  });
});
