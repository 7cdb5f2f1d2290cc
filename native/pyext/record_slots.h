/* pyext/record_slots.h - reading and filling the slots of a record class
 * (RawImage) directly (shared by the extensions in native/pyext/).
 *
 * Why: a class with __slots__ keeps each attribute at a fixed offset in
 * its instances, described by a member descriptor in the class's dict.
 * Going through getattr/setattr or calling the class costs a type lookup
 * and a descriptor call per attribute, or a Python __init__ per record:
 * for the 10,000 records of a List that was a third of framing them and
 * about a fifth of cutting them. An extension binds the class once and
 * then loads and stores at those offsets. */
#ifndef BOLTIMAGES_PYEXT_RECORD_SLOTS_H
#define BOLTIMAGES_PYEXT_RECORD_SLOTS_H

#include <Python.h>
#include <structmember.h>

/* The offsets of the writable object slots `names` (n interned strings)
 * of class cls, in that order. Returns 0, or -1 with TypeError set when
 * cls is no class or one of them is not such a slot. */
static inline int slots_bind(PyObject *cls, PyObject *const names[], int n, Py_ssize_t offsets[])
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "bind_record() takes a class");
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    for (int i = 0; i < n; i++) {
        PyObject *d = PyDict_GetItemWithError(type->tp_dict, names[i]);
        if (!d) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "bind_record: %s has no slot %U", type->tp_name, names[i]);
            return -1;
        }
        PyMemberDef *m = Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
        if (!m || m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject)
            || m->offset > type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)) {
            PyErr_Format(PyExc_TypeError, "bind_record: %U of %s is not a writable slot", names[i], type->tp_name);
            return -1;
        }
        offsets[i] = m->offset;
    }
    return 0;
}

/* The slot of obj at a bound offset (NULL inside: the slot is unset). */
static inline PyObject **slot_at(PyObject *obj, Py_ssize_t offset)
{
    return (PyObject **)((char *)obj + offset);
}

#endif
